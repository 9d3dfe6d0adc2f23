use store_core::StoreValue;

#[derive(StoreValue)]
union Bits {
    int: u32,
    float: f32,
}

fn main() {}
