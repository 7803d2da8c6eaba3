import Foundation
import TestKit

/// What a server answered, as far as the bytes read make sense of it.
struct HTTPReply: Sendable {
    /// The status code, or nil when the server closed the connection without a status line.
    var status: Int?
    /// The status line and header lines, as sent.
    var headers: String = ""
    var body: String
    /// The read waited out its timeout instead of seeing the server close the connection.
    var timedOut = false
}

/// A deliberately small HTTP/1.1 client over a plain socket, so that tests control every byte sent:
/// malformed headers, bodies over the limit, random garbage. One request per connection.
enum RawHTTP {
    static func post(
        port: Int, path: String, headers: [(String, String)], body: [UInt8]
    ) throws -> HTTPReply {
        var head = "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        head += "\r\n"
        return try exchange(port: port, request: Array(head.utf8) + body)
    }

    /// Sends `request` as is and reads until the server closes the connection or `timeout` passes.
    /// - Parameter halfClose: shut the sending side once the request is sent (a FIN), as some clients do,
    ///   and still read the answer.
    static func exchange(port: Int, request: [UInt8], timeout: Double = 15, halfClose: Bool = false) throws
        -> HTTPReply
    {
        guard let socket = Loopback.connect(port: port) else {
            throw SocketFailure(description: "connect to port \(port): errno \(errno)")
        }
        defer { close(socket) }
        var wait = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(socket, SOL_SOCKET, SO_SNDTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))

        // A server may answer (413) and close before reading everything: stop sending, still read.
        var sent = 0
        while sent < request.count {
            let count = request[sent...].withUnsafeBytes { send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count <= 0 { break }
            sent += count
        }
        if halfClose { shutdown(socket, Int32(SHUT_WR)) }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        var timedOut = false
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(socket, $0.baseAddress, $0.count, 0) }
            if count < 0, errno == EAGAIN || errno == EWOULDBLOCK { timedOut = true }
            if count <= 0 { break }
            received.append(contentsOf: buffer[..<count])
        }
        var reply = parse(received)
        reply.timedOut = timedOut
        return reply
    }

    private static func parse(_ bytes: [UInt8]) -> HTTPReply {
        let text = String(decoding: bytes, as: UTF8.self)
        let statusLine = text.prefix { $0 != "\r" && $0 != "\n" }
        let parts = statusLine.split(separator: " ")
        let status = parts.count >= 2 && parts[0].hasPrefix("HTTP/") ? Int(parts[1]) : nil
        let split = text.range(of: "\r\n\r\n")
        let body = split.map { String(text[$0.upperBound...]) } ?? ""
        let headers = split.map { String(text[..<$0.lowerBound]) } ?? text
        return HTTPReply(status: status, headers: headers, body: body)
    }
}
