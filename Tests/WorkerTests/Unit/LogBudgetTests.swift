import Testing

@testable import Worker

/// The receiver's log budget, with the clock passed in.
@Suite("log budget")
struct LogBudgetTests {
    @Test("a kind writes its lines per window, skips the rest, and the next line written counts what it skipped")
    func perWindow() {
        let start = ContinuousClock.now
        let budget = LogBudget(linesPerWindow: 3, window: .seconds(10))
        let firsts = (0..<3).map { _ in budget.admit("stripe bad_signature", now: start) }
        #expect(firsts == [0, 0, 0])
        for _ in 0..<7 { #expect(budget.admit("stripe bad_signature", now: start + .seconds(1)) == nil) }
        #expect(budget.admit("stripe stale", now: start + .seconds(1)) == 0, "another kind has its own window")
        #expect(budget.admit("stripe bad_signature", now: start + .seconds(9)) == nil, "still the same window")
        #expect(budget.admit("stripe bad_signature", now: start + .seconds(10)) == 8, "a new window reports 8 skipped")
        #expect(budget.admit("stripe bad_signature", now: start + .seconds(10)) == 0, "and counts from there")
    }
}
