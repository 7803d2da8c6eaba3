import Foundation

/// TCP on 127.0.0.1, for the tests and benchmarks that run servers of their own or talk to one.
public enum Loopback {
    /// A socket bound to a port the kernel picked (and listening, when `backlog` is given), with the port.
    public static func bind(listening backlog: Int32? = nil) throws(SocketFailure) -> (socket: Int32, port: Int) {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw SocketFailure(description: "socket: errno \(errno)") }
        var address = address(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.bind(socket, $0, length) == 0 && (backlog.map { listen(socket, $0) == 0 } ?? true)
                    && getsockname(socket, $0, &length) == 0
            }
        }
        guard bound else {
            close(socket)
            throw SocketFailure(description: "could not bind a port on 127.0.0.1: errno \(errno)")
        }
        return (socket, Int(UInt16(bigEndian: address.sin_port)))
    }

    /// A socket connected to `port`, or nil when nothing accepts there.
    public static func connect(port: Int) -> Int32? {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { return nil }
        var address = address(port: port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard connected else {
            close(socket)
            return nil
        }
        return socket
    }

    private static func address(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }
}

/// A socket call that failed, with errno.
public struct SocketFailure: Error, CustomStringConvertible {
    public var description: String

    public init(description: String) { self.description = description }
}
