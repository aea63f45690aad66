//! The `sluice` binary: parses the command line and hands over to the library.

/// mimalloc instead of glibc's allocator: ingest allocates many short-lived JSON values on
/// two or more threads, where glibc's malloc showed up as a quarter of the profile under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice::cli::main()
}
