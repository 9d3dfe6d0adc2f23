//! Parsing the options of `#[on_ready(...)]` with darling.

use darling::FromMeta;
use darling::ast::NestedMeta;
use darling::util::SpannedValue;
use proc_macro2::TokenStream;

/// `#[on_ready(store = "...", order = N, crate = "...")]`.
#[derive(FromMeta, Default)]
pub(crate) struct OnReadyAttrs {
    /// Run only on the store with this name.
    #[darling(default)]
    pub(crate) store: Option<SpannedValue<String>>,
    /// Position among hooks, lower first.
    #[darling(default)]
    pub(crate) order: Option<i32>,
    /// The path of the runtime crate.
    #[darling(rename = "crate", default)]
    pub(crate) krate: Option<syn::Path>,
}

impl OnReadyAttrs {
    pub(crate) fn parse(args: TokenStream) -> darling::Result<Self> {
        let items = NestedMeta::parse_meta_list(args)?;
        let attrs = Self::from_list(&items)?;
        if let Some(store) = attrs.store.as_ref().filter(|s| s.is_empty()) {
            return Err(darling::Error::custom(
                "the store name must not be empty; leave `store` out to run on every store",
            )
            .with_span(&store.span()));
        }
        Ok(attrs)
    }
}
