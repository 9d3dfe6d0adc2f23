use serde::{Deserialize, Serialize};
use store_core::StoreValue;

#[derive(Serialize, Deserialize, StoreValue)]
#[store(key = "user/{id}")]
pub struct User {
    name: String,
}

#[derive(Serialize, Deserialize, StoreValue)]
#[store(key = "{a}.{b}/{c}:{d}")]
struct Four;

fn main() {
    let key: store_core::Key<User> = User::key_for(7_u32).unwrap();
    assert_eq!(key.as_str(), "user/7");
    assert_eq!(User::parse_key::<(u32,)>("user/7"), Some((7,)));
    assert_eq!(Four::key_for('a', "b", 3, true).unwrap().as_str(), "a.b/3:true");
}
