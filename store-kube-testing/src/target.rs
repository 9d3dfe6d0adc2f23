//! The resource (and object) a request addresses, and the selectors a list
//! or watch filters it with.

use std::sync::Arc;

use serde_json::Value;

use crate::api_status::{ApiError, Subject};
use crate::etcd::ObjectKey;
use crate::query::Query;
use crate::registry::ResourceInfo;
use crate::selector::{FieldSelector, LabelSelector};

/// The resource (and object) a request addresses.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) info: Arc<ResourceInfo>,
    pub(crate) version: String,
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) subresource: Option<String>,
}

impl Target {
    pub(crate) fn key(&self, name: &str) -> ObjectKey {
        ObjectKey {
            resource: self.info.key(),
            namespace: self.namespace.clone().unwrap_or_default(),
            name: name.to_owned(),
        }
    }

    pub(crate) fn subject<'a>(&'a self, name: &'a str) -> Subject<'a> {
        Subject {
            group: &self.info.group,
            resource: &self.info.plural,
            name,
        }
    }

    pub(crate) fn api_version(&self) -> String {
        self.info.api_version(&self.version)
    }

    pub(crate) fn is_status(&self) -> bool {
        self.subresource.as_deref() == Some("status")
    }
}

/// Parsed `labelSelector` and `fieldSelector`.
pub(crate) struct Selectors {
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
}

impl Selectors {
    pub(crate) fn parse(query: &Query, info: &ResourceInfo) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(query.label_selector.as_deref().unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(
            query.field_selector.as_deref().unwrap_or(""),
            info.selectable_fields(),
        )
        .map_err(ApiError::bad_request)?;
        Ok(Self { labels, fields })
    }

    pub(crate) fn matches(&self, object: &Value) -> bool {
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object);
        self.labels.matches(labels) && self.fields.matches(object)
    }
}
