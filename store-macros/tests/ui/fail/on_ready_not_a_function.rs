use store_core::on_ready;

#[on_ready]
struct Seed;

fn main() {}
