//! What an `#[on_ready]` function must look like: a free `async fn` taking
//! one `&Store` and returning `Result<(), E>`. Types are left to the compiler
//! (generated code checks them at the user's tokens); shapes are checked here.

use syn::spanned::Spanned;
use syn::{FnArg, ReturnType, Signature, Type};

const SHAPE: &str = "async fn name(store: &Store) -> Result<(), E>";

pub(crate) fn signature(sig: &Signature) -> darling::Result<()> {
    let mut errors = darling::Error::accumulator();
    let mut push = |span: proc_macro2::Span, message: String| {
        errors.push(darling::Error::custom(message).with_span(&span));
    };
    if sig.asyncness.is_none() {
        push(
            sig.fn_token.span,
            format!("`#[on_ready]` needs an `async fn`: `{SHAPE}`"),
        );
    }
    if let Some(constness) = &sig.constness {
        push(
            constness.span,
            "`#[on_ready]` functions cannot be `const`".into(),
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        push(
            unsafety.span,
            "`#[on_ready]` functions cannot be `unsafe`".into(),
        );
    }
    if let Some(abi) = &sig.abi {
        push(
            abi.span(),
            "`#[on_ready]` functions cannot have an ABI".into(),
        );
    }
    if let Some(param) = sig
        .generics
        .params
        .iter()
        .find(|p| !matches!(p, syn::GenericParam::Lifetime(_)))
    {
        push(
            param.span(),
            "`#[on_ready]` functions cannot be generic; the hook is called with `&Store`".into(),
        );
    }
    if let Some(variadic) = &sig.variadic {
        push(
            variadic.span(),
            "`#[on_ready]` functions cannot be variadic".into(),
        );
    }

    let receiver = sig.inputs.iter().find_map(|arg| match arg {
        FnArg::Receiver(r) => Some(r),
        FnArg::Typed(_) => None,
    });
    if let Some(receiver) = receiver {
        push(
            receiver.span(),
            format!("`#[on_ready]` cannot take `self`; use a free function: `{SHAPE}`"),
        );
    } else if sig.inputs.len() != 1 {
        push(
            sig.paren_token.span.join(),
            format!(
                "`#[on_ready]` functions take exactly one argument, `store: &Store`, found {}",
                sig.inputs.len()
            ),
        );
    } else if let Some(FnArg::Typed(arg)) = sig.inputs.first() {
        match &*arg.ty {
            Type::Reference(r) if r.mutability.is_none() => {}
            Type::Reference(r) => push(
                r.span(),
                "`#[on_ready]` functions take `&Store`, not `&mut Store`".into(),
            ),
            other => push(
                other.span(),
                "`#[on_ready]` functions take the store by reference: `store: &Store`".into(),
            ),
        }
    }

    match &sig.output {
        ReturnType::Default => push(
            sig.ident.span(),
            format!(
                "`#[on_ready]` functions return `Result<(), E>` with `E` convertible to a boxed error: `{SHAPE}`"
            ),
        ),
        ReturnType::Type(_, ty) if !matches!(&**ty, Type::Path(_)) => push(
            ty.span(),
            format!(
                "`#[on_ready]` functions return `Result<(), E>` with `E` convertible to a boxed error: `{SHAPE}`"
            ),
        ),
        ReturnType::Type(..) => {}
    }
    errors.finish()
}
