//! Code generation for `#[on_ready]`: the function unchanged, plus a
//! `LinkedHook` submitted to `inventory` inside a `const _: () = { ... };`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, LitStr, ReturnType};

use super::attrs::OnReadyAttrs;

pub(crate) fn expand(attrs: &OnReadyAttrs, function: &ItemFn) -> TokenStream {
    let private = match &attrs.krate {
        Some(path) => quote!(#path::__private),
        None => quote!(::store_core::__private),
    };
    let ident = &function.sig.ident;
    let name = ident.to_string();
    let name = LitStr::new(name.strip_prefix("r#").unwrap_or(&name), ident.span());
    let store = match &attrs.store {
        Some(store) => {
            let lit = LitStr::new(store, store.span());
            quote!(::core::option::Option::Some(#lit))
        }
        None => quote!(::core::option::Option::None),
    };
    let order = attrs.order.unwrap_or(0);

    // Spanned on the user's tokens so type errors point at the argument or return type.
    let arg_span = match function.sig.inputs.first() {
        Some(FnArg::Typed(arg)) => arg.ty.span(),
        _ => ident.span(),
    };
    let ret_span = match &function.sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => ident.span(),
    };
    let mut callee = ident.clone();
    callee.set_span(arg_span);
    let call = quote_spanned!(arg_span=> #callee(store));
    let outcome = quote_spanned!(ret_span=> outcome);
    let into_result = quote_spanned!(ret_span=> <_ as HookResult>::into_hook_result(#outcome));

    quote! {
        #function

        #[doc(hidden)]
        const _: () = {
            #[diagnostic::on_unimplemented(
                message = "`#[on_ready]` functions return `Result<(), E>` with `E` convertible to a boxed error, not `{Self}`",
                label = "not a hook result",
                note = "`E` may be any `std::error::Error + Send + Sync + 'static`, a `String`, or `store_core::Error`"
            )]
            trait HookResult {
                fn into_hook_result(self) -> ::core::result::Result<(), #private::BoxError>;
            }

            impl<E: ::core::convert::Into<#private::BoxError>> HookResult for ::core::result::Result<(), E> {
                fn into_hook_result(self) -> ::core::result::Result<(), #private::BoxError> {
                    self.map_err(::core::convert::Into::into)
                }
            }

            fn run<'a>(store: &'a #private::Store) -> #private::HookFuture<'a> {
                ::std::boxed::Box::pin(async move {
                    let #outcome = #call.await;
                    #into_result
                })
            }

            #private::inventory::submit! {
                #private::LinkedHook {
                    name: #name,
                    store: #store,
                    order: #order,
                    run,
                }
            }
        };
    }
}
