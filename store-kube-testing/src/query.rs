//! The query parameters of a request.

use crate::api_status::ApiError;

/// The query parameters the fake understands; others are ignored, as the
/// real server ignores unknown ones.
#[derive(Debug, Default, Clone)]
pub(crate) struct Query {
    pub(crate) watch: bool,
    pub(crate) resource_version: Option<String>,
    pub(crate) resource_version_match: Option<String>,
    pub(crate) limit: Option<u64>,
    pub(crate) continue_token: Option<String>,
    pub(crate) label_selector: Option<String>,
    pub(crate) field_selector: Option<String>,
    pub(crate) timeout_seconds: Option<u64>,
    pub(crate) allow_watch_bookmarks: bool,
    pub(crate) field_manager: Option<String>,
    pub(crate) force: bool,
    pub(crate) dry_run: bool,
}

impl Query {
    pub(crate) fn parse(raw: &str) -> Result<Self, ApiError> {
        let mut query = Self::default();
        for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
            let text = || (!value.is_empty()).then(|| value.clone().into_owned());
            match key.as_ref() {
                "watch" => query.watch = parse_bool(&value),
                "resourceVersion" => query.resource_version = Some(value.clone().into_owned()),
                "resourceVersionMatch" => query.resource_version_match = text(),
                "limit" => query.limit = parse_number(&key, &value)?,
                "continue" => query.continue_token = text(),
                "labelSelector" => query.label_selector = text(),
                "fieldSelector" => query.field_selector = text(),
                "timeoutSeconds" => query.timeout_seconds = parse_number(&key, &value)?,
                "allowWatchBookmarks" => query.allow_watch_bookmarks = parse_bool(&value),
                "fieldManager" => query.field_manager = text(),
                "force" => query.force = parse_bool(&value),
                "dryRun" => match value.as_ref() {
                    "All" => query.dry_run = true,
                    "" => {}
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
                        )));
                    }
                },
                _ => {}
            }
        }
        Ok(query)
    }
}

/// kube-apiserver's query booleans: absent, "false" and "0" are false,
/// anything else (even empty or "maybe") is true.
fn parse_bool(value: &str) -> bool {
    !matches!(value.to_ascii_lowercase().as_str(), "false" | "0")
}

fn parse_number(key: &str, value: &str) -> Result<Option<u64>, ApiError> {
    if value.is_empty() {
        return Ok(None);
    }
    value.parse::<u64>().map(Some).map_err(|_| {
        ApiError::bad_request(format!(
            "invalid value for {key}: strconv.ParseInt: parsing {value:?}: invalid syntax"
        ))
    })
}
