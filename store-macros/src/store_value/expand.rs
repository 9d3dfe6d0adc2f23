//! Code generation for `#[derive(StoreValue)]`.
//!
//! Everything lands in one `const _: () = { ... };` and names the runtime as
//! `<crate>::__private` (`::store_core` unless `#[store(crate = "...")]`).

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::{DeriveInput, Ident, LitStr};

use super::attrs::StoreAttrs;
use super::validate::{self, KeySpec};

fn private(krate: Option<&syn::Path>) -> TokenStream {
    match krate {
        Some(path) => quote!(#path::__private),
        None => quote!(::store_core::__private),
    }
}

/// The `impl` bounds: a generic type is a store value when it is serializable
/// and `'static`; a concrete type is left to the trait's own check, so the
/// error names the missing trait instead of a trivially false bound.
fn where_clause(private: &TokenStream, generics: &syn::Generics) -> TokenStream {
    let existing = generics
        .where_clause
        .as_ref()
        .map(|w| {
            let preds = w.predicates.iter();
            quote!(#(#preds,)*)
        })
        .unwrap_or_default();
    if generics.params.is_empty() {
        return if existing.is_empty() {
            TokenStream::new()
        } else {
            quote!(where #existing)
        };
    }
    quote! {
        where #existing
            Self: #private::serde::Serialize
                + #private::serde::de::DeserializeOwned
                + ::core::marker::Send
                + ::core::marker::Sync
                + 'static,
    }
}

pub(crate) fn expand(attrs: &StoreAttrs) -> TokenStream {
    let private = private(attrs.krate.as_ref());
    let ident = &attrs.ident;
    let (impl_generics, ty_generics, _) = attrs.generics.split_for_impl();
    let where_clause = where_clause(&private, &attrs.generics);

    let default;
    let (spec, key_span) = match &attrs.key {
        Some(key) => (&key.spec, key.lit.span()),
        None => {
            default = KeySpec::Plain(validate::default_key(ident));
            (&default, ident.span())
        }
    };
    let key = LitStr::new(spec.text(), key_span);
    let checked = LitStr::new(spec.checked_text(), key_span);
    let key_check = quote_spanned! {key_span=>
        const _: () = if #private::check_key(#checked).is_err() {
            ::core::panic!("this key breaks the rules of `store_core::key::check`");
        };
    };

    let (validate, schema_check) = if attrs.schema.is_present() {
        schema(&private, ident, attrs.schema.span())
    } else {
        (TokenStream::new(), TokenStream::new())
    };

    let family = match spec {
        KeySpec::Family { placeholders, .. } => {
            family_methods(attrs, &private, placeholders, spec.text())
        }
        // One key: `T::key()` is available.
        KeySpec::Plain(_) => quote! {
            #[automatically_derived]
            impl #impl_generics #private::PlainKey for #ident #ty_generics #where_clause {}
        },
    };

    quote! {
        #[doc(hidden)]
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #private::StoreValue for #ident #ty_generics #where_clause {
                const KEY: &'static str = #key;
                #validate
            }

            #schema_check
            #family
            #key_check
        };
    }
}

/// `key_for` and `parse_key` for a type whose key has placeholders.
fn family_methods(
    attrs: &StoreAttrs,
    private: &TokenStream,
    placeholders: &[String],
    pattern: &str,
) -> TokenStream {
    let ident = &attrs.ident;
    let vis = &attrs.vis;
    let (impl_generics, ty_generics, _) = attrs.generics.split_for_impl();
    let where_clause = where_clause(private, &attrs.generics);
    let args: Vec<Ident> = placeholders
        .iter()
        .enumerate()
        .map(|(i, name)| {
            syn::parse_str::<Ident>(name).unwrap_or_else(|_| format_ident!("arg{}", i))
        })
        .collect();
    let key_for_doc = format!(
        "The key of the `{ident}` with these placeholder values, in the family `{pattern}`.\n\n\
         Fails when an argument is empty or contains the text that follows its placeholder."
    );
    let parse_key_doc = format!(
        "The placeholder values of a key in the family `{pattern}`, parsed as `A` \
         (a tuple of `FromStr` types, a `String` for one placeholder, or a `Vec<String>`); \
         `None` when the key is not in the family or a value does not parse."
    );
    quote! {
        #[automatically_derived]
        impl #impl_generics #ident #ty_generics #where_clause {
            #[doc = #key_for_doc]
            #vis fn key_for(
                #(#args: impl #private::KeyArg,)*
            ) -> #private::Result<#private::Key<Self>> {
                <Self as #private::StoreValue>::family().key((#(#args,)*))
            }

            #[doc = #parse_key_doc]
            #vis fn parse_key<A: #private::FromKeyArgs>(key: &str) -> ::core::option::Option<A> {
                <Self as #private::StoreValue>::family().parse::<A>(key)
            }
        }
    }
}

/// `validate` for `#[store(schema)]`, through a local trait whose
/// `on_unimplemented` tells a type without `JsonSchema` what to add, at `schema`.
fn schema(private: &TokenStream, ident: &Ident, span: Span) -> (TokenStream, TokenStream) {
    let message = format!("`{ident}` must implement `JsonSchema` for `#[store(schema)]`");
    let validate = quote_spanned! {span=>
        fn validate(
            raw: &#private::serde_json::Value,
        ) -> ::core::result::Result<(), #private::BoxError> {
            <Self as SchemaValue>::validate_schema(raw)
        }
    };
    let check = quote_spanned! {span=>
        #[diagnostic::on_unimplemented(
            message = #message,
            label = "needs `schemars::JsonSchema`",
            note = "add `#[derive(schemars::JsonSchema)]` to the type, or drop `schema`"
        )]
        trait SchemaValue {
            fn validate_schema(
                raw: &#private::serde_json::Value,
            ) -> ::core::result::Result<(), #private::BoxError>;
        }

        impl<T: #private::schemars::JsonSchema + 'static> SchemaValue for T {
            fn validate_schema(
                raw: &#private::serde_json::Value,
            ) -> ::core::result::Result<(), #private::BoxError> {
                #private::validate_schema::<T>(raw)
            }
        }
    };
    (validate, check)
}

/// What the derive leaves behind when its input has errors: the trait impl
/// with the default key, so uses of the type do not pile up more errors.
pub(crate) fn fallback(input: &DeriveInput, attrs: Option<&StoreAttrs>) -> TokenStream {
    let private = private(attrs.and_then(|a| a.krate.as_ref()));
    let ident = &input.ident;
    let (impl_generics, ty_generics, _) = input.generics.split_for_impl();
    let where_clause = where_clause(&private, &input.generics);
    let key = LitStr::new(&validate::default_key(ident), Span::call_site());
    quote! {
        #[doc(hidden)]
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #private::StoreValue for #ident #ty_generics #where_clause {
                const KEY: &'static str = #key;
            }
        };
    }
}
