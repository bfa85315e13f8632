//! The reader binary; everything it does is in [`reader::run`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::main_for(shared::settings::Service::Reader, reader::run).await
}
