//! `#[on_ready]`: parse ([`attrs`]), check the signature ([`validate`]),
//! generate the registration ([`expand`]).

mod attrs;
mod expand;
mod validate;

use proc_macro2::TokenStream;
use quote::ToTokens;

/// Expands the attribute; on error the function is emitted unchanged next to
/// the errors, and nothing is registered.
pub(crate) fn on_ready(args: TokenStream, item: TokenStream) -> TokenStream {
    let function: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let error = syn::Error::new_spanned(
                &item,
                "`#[on_ready]` goes on an `async fn` taking `store: &Store`",
            );
            let mut out = error.to_compile_error();
            out.extend(item);
            return out;
        }
    };
    let mut errors = darling::Error::accumulator();
    let attrs = errors.handle(attrs::OnReadyAttrs::parse(args));
    errors.handle(validate::signature(&function.sig));
    match (errors.finish(), attrs) {
        (Ok(()), Some(attrs)) => expand::expand(&attrs, &function),
        (result, _) => {
            let mut out = function.to_token_stream();
            if let Err(e) = result {
                out.extend(e.write_errors());
            }
            out
        }
    }
}
