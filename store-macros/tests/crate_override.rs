//! `crate = "..."`: the types and hook in `store-macros-renamed` name the
//! runtime only as `renamed_core`; here they meet the ordinary `store_core`.

use store_core::{Store, StoreValue};
use store_macros_renamed::{Counter, STORE, User};

#[tokio::test]
async fn types_and_hooks_derived_through_a_renamed_crate_work() -> store_core::Result<()> {
    let store = Store::builder().name(STORE).open().await?;
    store.ready().await?;
    assert_eq!(store.get(Counter::key())?.as_deref(), Some(&Counter(41)));

    let key = User::key_for("ada")?;
    assert_eq!(key.as_str(), "renamed/user/ada");
    assert_eq!(
        User::parse_key::<String>(key.as_str()).as_deref(),
        Some("ada")
    );
    store.set(&key, &User { name: "Ada".into() })?;
    assert_eq!(
        store.get(&key)?.map(|u| u.name.clone()).as_deref(),
        Some("Ada")
    );
    Ok(())
}
