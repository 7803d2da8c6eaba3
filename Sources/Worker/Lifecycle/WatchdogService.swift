import ServiceLifecycle

/// Pings systemd's watchdog (`WatchdogSec=`) at half its interval, only while `isHealthy` says the
/// process does its work (the pool's fetcher turns); a stuck process is then restarted by systemd.
struct WatchdogService: Service {
    let notifier: SystemdNotifier
    let interval: Double
    let isHealthy: @Sendable (_ within: Double) -> Bool

    func run() async {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                if isHealthy(interval) { notifier.watchdog() }
                try? await Task.sleep(for: .milliseconds(Int(interval * 500)))
            }
        }
    }
}
