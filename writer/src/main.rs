//! The writer binary; everything it does is in [`writer::run`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::main_for(shared::settings::Service::Writer, writer::run).await
}
