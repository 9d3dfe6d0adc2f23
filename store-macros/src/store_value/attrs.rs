//! Parsing `#[store(...)]` on a `#[derive(StoreValue)]` type with darling.

use darling::util::Flag;
use darling::{FromDeriveInput, FromMeta};
use syn::{Expr, ExprLit, Lit, LitStr};

/// The type's `#[store(...)]` options, with the parts of the item expansion needs.
#[derive(FromDeriveInput)]
#[darling(attributes(store))]
pub(crate) struct StoreAttrs {
    pub(crate) ident: syn::Ident,
    pub(crate) vis: syn::Visibility,
    pub(crate) generics: syn::Generics,
    /// `key = "..."`, already checked against the key rules.
    #[darling(default)]
    pub(crate) key: Option<KeyAttr>,
    /// `schema`: validate stored values against the type's `schemars` schema.
    pub(crate) schema: Flag,
    /// `crate = "..."`: the path of the runtime crate.
    #[darling(rename = "crate", default)]
    pub(crate) krate: Option<syn::Path>,
}

/// The `key = "..."` literal and what it means.
pub(crate) struct KeyAttr {
    pub(crate) lit: LitStr,
    pub(crate) spec: super::validate::KeySpec,
}

impl FromMeta for KeyAttr {
    fn from_word() -> darling::Result<Self> {
        Err(darling::Error::custom(
            "`key` needs a value: `#[store(key = \"...\")]`; leave `key` out to use the default key derived from the type name",
        ))
    }

    fn from_expr(expr: &Expr) -> darling::Result<Self> {
        match expr {
            Expr::Lit(ExprLit {
                lit: Lit::Str(lit), ..
            }) => {
                let spec = super::validate::key(lit)?;
                Ok(KeyAttr {
                    lit: lit.clone(),
                    spec,
                })
            }
            Expr::Group(group) => Self::from_expr(&group.expr),
            other => Err(darling::Error::custom(
                "expected a string literal: `#[store(key = \"...\")]`",
            )
            .with_span(other)),
        }
    }
}
