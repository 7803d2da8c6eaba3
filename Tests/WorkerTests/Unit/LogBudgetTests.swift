import Testing

@testable import Worker

/// The log budget, with the clock passed in.
@Suite("log budget")
struct LogBudgetTests {
    @Test("a kind writes its lines per window and skips the rest, and what it skipped is reported once its window ends")
    func perWindow() {
        let start = ContinuousClock.now
        let budget = LogBudget<String>(linesPerWindow: 3, window: .seconds(10))
        #expect((0..<3).map { _ in budget.admit("stripe bad_signature", now: start) } == [true, true, true])
        for _ in 0..<7 { #expect(!budget.admit("stripe bad_signature", now: start + .seconds(1))) }
        #expect(budget.admit("stripe stale", now: start + .seconds(1)), "another kind has its own window")
        #expect(budget.skippedLines(now: start + .seconds(9)).isEmpty, "not before the window ends")
        let reported = budget.skippedLines(now: start + .seconds(10))
        #expect(reported.count == 1 && reported.first?.kind == "stripe bad_signature" && reported.first?.count == 7)
        #expect(budget.skippedLines(now: start + .seconds(20)).isEmpty, "each count is reported once")
        #expect(budget.admit("stripe bad_signature", now: start + .seconds(10)), "a new window writes again")
    }

    @Test("lines skipped in a window that a new line already rolled over are still reported, and not merged away")
    func rolledOver() {
        let start = ContinuousClock.now
        let budget = LogBudget<Int>(linesPerWindow: 1, window: .seconds(10))
        #expect(budget.admit(401, now: start))
        #expect(!budget.admit(401, now: start))
        #expect(!budget.admit(401, now: start))
        #expect(budget.admit(401, now: start + .seconds(10)), "the next window's first line")
        #expect(!budget.admit(401, now: start + .seconds(11)))
        let first = budget.skippedLines(now: start + .seconds(12))
        #expect(first.map(\.count) == [2], "the ended window's two, not yet the current one's")
        #expect(budget.skippedLines(now: start + .seconds(20)).map(\.count) == [1])
    }
}
