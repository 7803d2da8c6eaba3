import Foundation
import Testing

@testable import PGQueue
@testable import Worker

/// The pool's decisions, in this process, with the clock passed in: no threads, no database.
@Suite("pool decisions")
struct PoolStateTests {
    static let start = ContinuousClock.now

    static func at(_ milliseconds: Int) -> ContinuousClock.Instant { start + .milliseconds(milliseconds) }

    static func job(_ id: Int64, kind: String = "k", queue: String = "q", attempt: Int = 1, holder: String = "h")
        -> ClaimedJob
    {
        ClaimedJob(
            id: id, queue: queue, kind: kind, payload: "{}", priority: 0, attempt: attempt, maxAttempts: 5,
            uniqueKey: nil, runAt: Date(), createdAt: Date(), holder: holder)
    }

    /// One lane of every queue with `slots` slots, or named lanes.
    static func state(slots: Int = 2, named: [(String, Int)] = [], timeouts: [String: Double] = [:]) -> PoolState {
        var lanes: [Lane] = []
        var next = 0
        for (name, size) in named.isEmpty ? [(nil as String?, slots)] : named.map({ ($0.0 as String?, $0.1) }) {
            lanes.append(Lane(queue: name, slots: Array(next..<(next + size))))
            next += size
        }
        return PoolState(lanes: lanes, handlerTimeouts: timeouts, excludedQueues: ["webhooks"], now: start)
    }

    @Test("an idle pool wants one job per free slot in each lane; a stopping pool claims nothing")
    func claimsForFreeSlots() {
        var state = Self.state(named: [("a", 2), ("b", 3)])
        #expect(
            state.claims(now: Self.at(1))
                == [.init(lane: 0, queue: "a", want: 2), .init(lane: 1, queue: "b", want: 3)])
        #expect(state.lastFetcherTick == Self.at(1))
        state.isStopping = true
        #expect(state.claims(now: Self.at(2)) == nil)
    }

    @Test("the prefetch follows the measured start rate: 50 ms of work, capped at 400 per slot and 4,000 in all")
    func prefetchFromRate() {
        var state = Self.state(slots: 2)
        state.lanes[0].startedSinceSample = 400  // 400 starts in 100 ms: 4,000 a second
        _ = state.claims(now: Self.at(100))
        #expect(state.lanes[0].prefetchTarget == 200)
        #expect(state.lanes[0].startedSinceSample == 0)
        state.lanes[0].startedSinceSample = 100_000
        _ = state.claims(now: Self.at(200))
        #expect(state.lanes[0].prefetchTarget == 800, "capped at 400 per slot")
        // Too soon to measure again: the target stays.
        state.lanes[0].startedSinceSample = 1
        _ = state.claims(now: Self.at(210))
        #expect(state.lanes[0].prefetchTarget == 800)

        var wide = Self.state(slots: 20)
        wide.lanes[0].startedSinceSample = 100_000
        _ = wide.claims(now: Self.at(100))
        #expect(wide.lanes[0].prefetchTarget == 4000, "capped at 4,000 however many slots")
        #expect(wide.claims(now: Self.at(101)) == [.init(lane: 0, queue: nil, want: 4000)])
    }

    @Test("after an idle spell, a burst of fast starts is measured at once; a few slow starts wait for 50 ms")
    func burstAfterIdle() {
        var state = Self.state(slots: 10)
        _ = state.claims(now: Self.at(1_000))  // the idle second: no starts, no prefetch
        #expect(state.lanes[0].prefetchTarget == 0)
        state.lanes[0].startedSinceSample = 19
        _ = state.claims(now: Self.at(1_004))
        #expect(state.lanes[0].prefetchTarget == 0, "fewer than twice the slots: not yet a burst")
        state.lanes[0].startedSinceSample = 20  // 20 starts in 4 ms: 5,000 a second
        _ = state.claims(now: Self.at(1_004))
        #expect(state.lanes[0].prefetchTarget == 250)
        state.lanes[0].startedSinceSample = 20
        _ = state.claims(now: Self.at(1_005))
        #expect(state.lanes[0].prefetchTarget == 250, "a window under 2 ms is too short to measure")
    }

    @Test("a burst in one lane does not measure a lane of slow jobs over the burst's short window")
    func burstMeasuresItsOwnLane() {
        var state = Self.state(named: [("fast", 10), ("slow", 2)])
        _ = state.claims(now: Self.at(1_000))
        state.lanes[0].startedSinceSample = 20
        state.lanes[1].startedSinceSample = 1  // one slow start in the same 2 ms would rate it at 500 a second
        _ = state.claims(now: Self.at(1_002))
        #expect(state.lanes[0].prefetchTarget == 500)
        #expect(state.lanes[1].prefetchTarget == 0 && state.lanes[1].startedSinceSample == 1)
        _ = state.claims(now: Self.at(1_050))
        #expect(state.lanes[1].prefetchTarget == 1, "measured over its own 50 ms: 20 a second")
    }

    @Test("a buffer is refilled only once it has run half down, so claims stay large")
    func refillAtHalf() {
        var state = Self.state(slots: 1)
        state.lanes[0].prefetchTarget = 100
        state.lanes[0].freeSlots = []
        state.lanes[0].buffer = .init((1...60).map { Self.job($0) })
        #expect(state.claims(now: Self.at(1)) == [])
        state.lanes[0].buffer = .init((1...50).map { Self.job($0) })
        #expect(state.claims(now: Self.at(2)) == [.init(lane: 0, queue: nil, want: 50)])
    }

    @Test("claimed jobs take free slots lowest first; the rest wait in the buffer")
    func acceptFillsSlots() {
        var state = Self.state(slots: 2)
        let starts = state.accept((1...3).map { Self.job($0) }, from: "q", lane: 0, now: Self.at(5))
        #expect(starts.map(\.slot) == [0, 1] && starts.map(\.job.id) == [1, 2])
        #expect(state.lanes[0].buffer.map(\.id) == [3])
        #expect(state.held.count == 3 && state.runningCount == 2)
        #expect(state.held[1]?.startedAt == Self.at(5))
    }

    @Test("a lane of every queue forgets a queue that gave nothing; a named lane keeps its queue")
    func emptyClaimForgetsQueue() {
        var every = Self.state(slots: 1)
        every.discovered(["a", "b"], now: Self.at(0))
        _ = every.accept([], from: "a", lane: 0, now: Self.at(1))
        #expect(every.knownQueues == ["b"])
        var named = Self.state(named: [("a", 1)])
        named.knownQueues = ["a"]
        _ = named.accept([], from: "a", lane: 0, now: Self.at(1))
        #expect(named.knownQueues == ["a"])
    }

    @Test("a lane of every queue claims from each known queue in turn, never from an excluded one")
    func rotation() {
        var state = Self.state(slots: 1)
        state.discovered(["a", "b", "c", "webhooks"], now: Self.at(0))
        let claim = PoolState.Claim(lane: 0, queue: nil, want: 1)
        #expect(state.queues(for: claim) == ["b", "c", "a"])
        #expect(state.queues(for: claim) == ["c", "a", "b"])
        #expect(state.queues(for: claim) == ["a", "b", "c"])
        #expect(state.queues(for: .init(lane: 0, queue: "x", want: 1)) == ["x"])
    }

    @Test("a lane of every queue leaves a queue with a lane of its own to that lane")
    func ownLaneQueues() {
        var state = PoolState(
            lanes: [Lane(queue: nil, slots: [0, 1]), Lane(queue: "outbound", slots: [2])], excludedQueues: ["webhooks"],
            now: Self.start)
        state.discovered(["a", "outbound", "webhooks"], now: Self.at(0))
        #expect(state.queues(for: .init(lane: 0, queue: nil, want: 2)) == ["a"])
        #expect(state.queues(for: .init(lane: 1, queue: "outbound", want: 1)) == ["outbound"])
    }

    /// The queues the fetcher's round at `milliseconds` claims from.
    static func asked(_ state: inout PoolState, at milliseconds: Int) -> [String?] {
        (state.claims(now: at(milliseconds)) ?? []).map(\.queue)
    }

    @Test(
        "a lane whose queue was empty is not asked again each round, but on a notification, a retry due or after 50 ms"
    )
    func quietLanes() {
        var state = Self.state(named: [("busy", 1), ("outbound", 2)])
        _ = state.claims(now: Self.at(0))
        _ = state.accept([Self.job(1, queue: "busy")], from: "busy", lane: 0, now: Self.at(1))
        _ = state.accept([], from: "outbound", lane: 1, now: Self.at(1))
        // The busy lane's next round leaves the empty one out.
        _ = state.finish([Self.job(1, queue: "busy")], results: [()], lane: 0, slot: 0, now: Self.at(2))
        let asked1 = Self.asked(&state, at: 3)
        #expect(asked1 == ["busy"])
        // A notification for another queue changes nothing; one for its own queue asks it again.
        let wokenByBusy = state.notified(queue: "busy")
        let wokenByOther = state.notified(queue: "default")
        #expect(wokenByBusy && !wokenByOther)
        let asked2 = Self.asked(&state, at: 4)
        #expect(asked2 == ["busy"])
        let wokenByOwn = state.notified(queue: "outbound")
        #expect(wokenByOwn)
        let asked3 = Self.asked(&state, at: 5)
        #expect(asked3 == ["busy", "outbound"])
        // Empty again: asked again once 50 ms have passed, or at once when a retry comes due.
        _ = state.accept([], from: "outbound", lane: 1, now: Self.at(6))
        let asked4 = Self.asked(&state, at: 55)
        #expect(asked4 == ["busy"])
        let asked5 = Self.asked(&state, at: 56)
        #expect(asked5 == ["busy", "outbound"])
        // A notification while the claim was out (its commit came after the claim looked): not quiet.
        let asked8 = Self.asked(&state, at: 1_006)
        #expect(asked8 == ["busy", "outbound"])
        _ = state.notified(queue: "outbound")
        _ = state.accept([], from: "outbound", lane: 1, now: Self.at(1_007))
        let asked9 = Self.asked(&state, at: 1_007)
        #expect(asked9 == ["busy", "outbound"])
        _ = state.accept([], from: "outbound", lane: 1, now: Self.at(1_007))
        state.scheduleWakes(in: [0.03], now: Self.at(1_007))
        let asked6 = Self.asked(&state, at: 1_040)
        #expect(asked6 == ["busy"])
        let asked7 = Self.asked(&state, at: 1_045)
        #expect(asked7 == ["busy", "outbound"])
    }

    @Test("a lane of every queue keeps a queue notified while its claim was out, though the claim found nothing")
    func notifiedWhileClaiming() {
        var state = Self.state(slots: 1)
        state.discovered(["a"], now: Self.at(0))
        _ = state.claims(now: Self.at(1))
        _ = state.notified(queue: "a")
        _ = state.accept([], from: "a", lane: 0, now: Self.at(2))
        #expect(state.knownQueues == ["a"])
        _ = state.claims(now: Self.at(3))
        _ = state.accept([], from: "a", lane: 0, now: Self.at(4))
        #expect(state.knownQueues.isEmpty)
    }

    @Test("queues are looked up when none is known, and again after the poll interval (a second at most)")
    func discovery() {
        var state = Self.state(slots: 1)
        let every = [PoolState.Claim(lane: 0, queue: nil, want: 1)]
        #expect(state.needsDiscovery(for: every, now: Self.at(0), pollSeconds: 5))
        state.discovered(["a"], now: Self.at(0))
        #expect(!state.needsDiscovery(for: every, now: Self.at(900), pollSeconds: 5))
        #expect(state.needsDiscovery(for: every, now: Self.at(1001), pollSeconds: 5))
        #expect(!state.needsDiscovery(for: [.init(lane: 0, queue: "a", want: 1)], now: Self.at(9000), pollSeconds: 5))

        // A queue with a lane of its own, or an excluded one, is never one the lane of every queue knows.
        var mixed = PoolState(
            lanes: [Lane(queue: nil, slots: [0]), Lane(queue: "outbound", slots: [1])], excludedQueues: ["webhooks"],
            now: Self.start)
        mixed.discovered(["outbound", "webhooks"], now: Self.at(0))
        _ = mixed.notified(queue: "outbound")
        #expect(mixed.knownQueues.isEmpty)
        // Knowing of none, it looks again after 10 ms; knowing of some, at once when a retry it recorded is due.
        #expect(!mixed.needsDiscovery(for: every, now: Self.at(5), pollSeconds: 5))
        #expect(mixed.needsDiscovery(for: every, now: Self.at(11), pollSeconds: 5))
        mixed.discovered(["a"], now: Self.at(20))
        mixed.scheduleWakes(in: [0.1], now: Self.at(20))
        #expect(!mixed.needsDiscovery(for: every, now: Self.at(200), pollSeconds: 5))
        _ = mixed.claims(now: Self.at(200))
        #expect(mixed.needsDiscovery(for: every, now: Self.at(200), pollSeconds: 5))
    }

    @Test("a finished chunk hands the slot the next chunk, sized by the buffer per slot, at most 32")
    func finishTakesNextChunk() {
        var state = Self.state(slots: 2)
        let starts = state.accept((1...102).map { Self.job($0) }, from: "q", lane: 0, now: Self.at(0))
        let (accepted, next, _) = state.finish(
            [starts[0].job], results: ["done"], lane: 0, slot: starts[0].slot, now: Self.at(10))
        #expect(accepted == ["done"])
        #expect(next.count == 32, "100 buffered over 2 slots, capped at 32")
        #expect(state.held[next[31].id]?.deadline == Self.at(10) + .seconds(300 * 32), "position scales the timeout")
        #expect(!state.lanes[0].freeSlots.contains(starts[0].slot))
    }

    @Test("a slot is freed when the buffer is empty, and asks for a refill")
    func finishFreesSlot() {
        var state = Self.state(slots: 1)
        let starts = state.accept([Self.job(1)], from: "q", lane: 0, now: Self.at(0))
        let (accepted, next, wantsRefill) = state.finish(
            [starts[0].job], results: [1], lane: 0, slot: 0, now: Self.at(5))
        #expect(accepted == [1] && next.isEmpty && wantsRefill)
        #expect(state.lanes[0].freeSlots == [0] && state.held.isEmpty)
    }

    @Test("the result of an attempt that timed out, or was superseded by a newer claim, is dropped")
    func finishDropsStaleResults() {
        var state = Self.state(slots: 2)
        let starts = state.accept([Self.job(1), Self.job(2)], from: "q", lane: 0, now: Self.at(0))
        state.held[1]?.timedOut = true
        state.held[2] = HeldJob(job: Self.job(2, attempt: 2, holder: "newer"), lane: 0, claimedAt: Self.at(1))
        let (accepted, _, _) = state.finish(
            starts.map(\.job), results: ["first", "second"], lane: 0, slot: 0, now: Self.at(2))
        #expect(accepted.isEmpty)
        #expect(state.held[2]?.job.holder == "newer", "the newer attempt stays held")
    }

    @Test("a job whose lease was lost while it waited is skipped, not started")
    func lostWhileBuffered() {
        var state = Self.state(slots: 1)
        _ = state.accept([Self.job(1), Self.job(2)], from: "q", lane: 0, now: Self.at(0))
        state.held[2]?.leaseLost = true
        let (_, next, _) = state.finish([Self.job(1)], results: [()], lane: 0, slot: 0, now: Self.at(1))
        #expect(next.isEmpty && state.held[2] == nil)
    }

    @Test("a kind's timeout comes from sluice.kinds, else its handler, else five minutes")
    func timeouts() {
        var state = Self.state(timeouts: ["slow": 60, "fast": 2])
        state.kindTimeouts = ["fast": 0.5]
        #expect(state.timeout(of: "fast") == 0.5)
        #expect(state.timeout(of: "slow") == 60)
        #expect(state.timeout(of: "other") == 300)
    }

    @Test("an idle fetcher wakes for the soonest retry it recorded, at once for one already due")
    func idleWait() {
        var state = Self.state()
        #expect(state.idleWait(now: Self.at(0), pollSeconds: 5) == 5)
        state.scheduleWakes(in: [2, 0.5], now: Self.at(0))
        #expect(abs(state.idleWait(now: Self.at(0), pollSeconds: 5) - 0.505) < 0.001)
        #expect(state.idleWait(now: Self.at(600), pollSeconds: 5) == 0.001)
        // The fetcher's next round takes the one that came due.
        _ = state.claims(now: Self.at(600))
        #expect(state.dueTimes.count == 1)
        state.scheduleWakes(in: Array(repeating: 1, count: 2000), now: Self.at(0))
        #expect(state.dueTimes.count == 1000)
    }

    @Test("maintenance: deadlines passed are timed out once; stale waiting jobs are given back; unextended leases lost")
    func maintenance() {
        var state = Self.state(slots: 1)
        _ = state.accept([Self.job(1, kind: "fast"), Self.job(2)], from: "q", lane: 0, now: Self.at(0))
        state.kindTimeouts = [:]
        state.held[1]?.deadline = Self.at(100)
        #expect(state.expireTimeouts(now: Self.at(50)).isEmpty)
        #expect(state.expireTimeouts(now: Self.at(100)).map(\.job.id) == [1])
        #expect(state.expireTimeouts(now: Self.at(200)).isEmpty, "failed once only")
        // Job 2 has waited for a slot since 0: before the stale line, it is given back, once.
        let stale = state.leasesToExtend(staleBefore: Self.at(1))
        #expect(stale.extend.isEmpty)
        #expect(stale.giveBack.map(\.id) == [2])
        #expect(state.held[2]?.leaseLost == true)
        #expect(state.leasesToExtend(staleBefore: Self.at(1)).giveBack.isEmpty, "given back once")

        var other = Self.state(slots: 2)
        _ = other.accept([Self.job(1), Self.job(2)], from: "q", lane: 0, now: Self.at(0))
        let (leases, giveBack) = other.leasesToExtend(staleBefore: Self.at(0))
        #expect(Set(leases.map(\.id)) == [1, 2] && giveBack.isEmpty)
        other.held[2] = nil  // finished meanwhile: not lost
        #expect(other.markLost(leases, extended: []).map(\.id) == [1])
        #expect(other.held[1]?.leaseLost == true)
    }

    @Test("stopping gives back buffered jobs at once and running ones still this worker's")
    func stopping() {
        var state = Self.state(slots: 1)
        _ = state.accept([Self.job(1), Self.job(2), Self.job(3)], from: "q", lane: 0, now: Self.at(0))
        #expect(state.releaseBuffered().map(\.id) == [2, 3])
        #expect(state.lanes[0].buffer.isEmpty)
        #expect(state.unfinishedLeases.map(\.id) == [1])
        state.held[1]?.timedOut = true
        #expect(state.unfinishedLeases.isEmpty)
    }
}
