//! The reader binary; everything it does is in [`reader::run`].

/// mimalloc instead of glibc's malloc: a request makes dozens of small short-lived allocations
/// across two worker threads, and glibc's arenas spent a fifth of the reader's CPU on them
/// (see docs/decisions.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::main_for(shared::settings::Service::Reader, reader::run).await
}
