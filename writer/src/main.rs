//! The writer binary: settings, logging and exit code come from `shared::main_for`; the rest
//! is [`writer::run`], which builds [`writer::Application`] and serves it.

/// mimalloc instead of glibc's malloc: a request makes dozens of small short-lived allocations
/// across tokio's worker threads, and glibc's arenas spent a fifth of the reader's CPU on them
/// (docs/decisions.md 16). The worker count is tokio's (`TOKIO_WORKER_THREADS`; `npm start`
/// gives each service one fewer than the cores, at least one).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::main_for(shared::settings::Service::Writer, writer::run).await
}
