/// What one run of the rescuer did.
public struct RescueReport: Sendable, Hashable {
    /// Jobs whose lease expired and that went back to the queue.
    public var rescued: [Int64] = []
    /// Jobs whose lease expired on their last attempt and that went to the dead letters.
    public var dead: [Int64] = []

    public init(rescued: [Int64] = [], dead: [Int64] = []) {
        self.rescued = rescued
        self.dead = dead
    }
}
