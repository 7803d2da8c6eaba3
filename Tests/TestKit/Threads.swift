import Foundation
public import Synchronization

/// Runs `body` on `count` real threads at once and waits for all of them.
///
/// Blocking libpq calls belong on threads of their own, not on Swift concurrency's small shared pool.
/// A start barrier releases every thread together so they really race.
public func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) throws -> Void) throws {
    let group = DispatchGroup()
    let start = DispatchSemaphore(value: 0)
    let failures = Mutex<[any Error]>([])
    for index in 0..<count {
        group.enter()
        let thread = Thread {
            start.wait()
            do {
                try body(index)
            } catch {
                failures.withLock { $0.append(error) }
            }
            group.leave()
        }
        thread.start()
    }
    for _ in 0..<count { start.signal() }
    group.wait()
    if let first = failures.withLock({ $0.first }) { throw first }
}

/// Polls `condition` until it holds or `timeout` seconds pass; for waiting on another process or thread.
public func eventually(timeout: Double = 10, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date(timeIntervalSinceNow: timeout)
    while Date() < deadline {
        if try condition() { return true }
        Thread.sleep(forTimeInterval: 0.02)
    }
    return try condition()
}

/// A value shared between test threads, behind a lock.
public final class Box<Value: Sendable>: Sendable {
    public let value: Mutex<Value>

    public init(_ initial: Value) { value = Mutex(initial) }
}
