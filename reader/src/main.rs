//! The reader binary; everything it does is in [`reader::run`].

/// mimalloc instead of glibc's malloc: a request makes dozens of small short-lived allocations
/// across tokio's worker threads (one per core; `npm start` gives the reader one fewer, at least
/// one), and glibc's arenas spent a fifth of the reader's CPU on them (docs/decisions.md 16).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::main_for(shared::settings::Service::Reader, reader::run).await
}
