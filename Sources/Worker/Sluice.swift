import ArgumentParser

@main
struct Sluice: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "A durable job worker on PostgreSQL.",
        discussion: """
            Jobs wait in PostgreSQL (schema sluice). 'sluice serve' runs the webhook receiver, the worker pool
            with its housekeeping, and the admin server; 'sluice work' runs more workers on other hosts, and
            'sluice receive' the receiver alone. Operators inspect and retry
            failed jobs with 'sluice dead' or plain psql (see schema.sql).

            Configuration comes from the environment (see deploy/sluice.env.example); every variable also
            has a flag. DATABASE_URL is a libpq URI or conninfo; unset, libpq's PG* variables apply.
            """,
        subcommands: [
            ServeCommand.self, WorkCommand.self, ReceiveCommand.self, APICommand.self, MigrateCommand.self,
            EnqueueCommand.self,
            DeadCommand.self, EndpointsCommand.self, EventsCommand.self,
            StatsCommand.self, UsageCommand.self, ResyncCommand.self, ErasuresCommand.self, KeysCommand.self,
        ]
    )
}
