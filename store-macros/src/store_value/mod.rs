//! `#[derive(StoreValue)]`: parse ([`attrs`]), check ([`validate`]), generate ([`expand`]).

mod attrs;
mod expand;
mod validate;

use darling::FromDeriveInput;
use proc_macro2::TokenStream;
use syn::DeriveInput;

/// Expands the derive; errors come back as `compile_error!`s next to a
/// fallback impl, so one mistake does not cascade into errors at every use.
pub(crate) fn derive(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(e) => return e.to_compile_error(),
    };
    let mut errors = darling::Error::accumulator();
    let shape_ok = errors.handle(validate::shape(&input)).is_some();
    let attrs = errors.handle(attrs::StoreAttrs::from_derive_input(&input));
    match (errors.finish(), attrs) {
        (Ok(()), Some(attrs)) => expand::expand(&attrs),
        (Err(e), attrs) => {
            let mut out = e.write_errors();
            if shape_ok {
                out.extend(expand::fallback(&input, attrs.as_ref()));
            }
            out
        }
        (Ok(()), None) => TokenStream::new(),
    }
}
