import ArgumentParser

@main struct Sluice: ParsableCommand {}
