//! Checks on the JSON text before it becomes a `Spec`: fields whose absence the typed
//! parse either hides (a default of 0) or reports without a path.

use serde_json::Value;

use crate::SpecError;

/// Checks the raw `config.json` document.
pub fn check_raw(doc: &Value) -> Result<(), SpecError> {
    let Some(obj) = doc.as_object() else {
        return Err(SpecError::invalid("(document)", "must be a JSON object"));
    };
    if let Some(process) = obj.get("process").filter(|p| !p.is_null()) {
        let Some(p) = process.as_object() else {
            return Err(SpecError::invalid("process", "must be an object"));
        };
        for key in ["cwd", "user"] {
            if !p.contains_key(key) {
                return Err(SpecError::Missing {
                    field: format!("process.{key}"),
                });
            }
        }
    }
    let linux = obj.get("linux").and_then(Value::as_object);
    if let Some(list) = linux
        .and_then(|l| l.get("namespaces"))
        .and_then(Value::as_array)
    {
        for (i, ns) in list.iter().enumerate() {
            if ns.get("type").is_none() {
                return Err(SpecError::Missing {
                    field: format!("linux.namespaces[{i}].type"),
                });
            }
        }
    }
    if let Some(list) = linux
        .and_then(|l| l.get("devices"))
        .and_then(Value::as_array)
    {
        for (i, d) in list.iter().enumerate() {
            for key in ["path", "type"] {
                if d.get(key).is_none() {
                    return Err(SpecError::Missing {
                        field: format!("linux.devices[{i}].{key}"),
                    });
                }
            }
            // oci-spec defaults missing numbers to 0; char and block nodes need real ones.
            if matches!(d.get("type").and_then(Value::as_str), Some("c" | "b" | "u")) {
                for key in ["major", "minor"] {
                    if matches!(d.get(key), None | Some(Value::Null)) {
                        return Err(SpecError::Missing {
                            field: format!("linux.devices[{i}].{key}"),
                        });
                    }
                }
            }
        }
    }
    if let Some(list) = obj.get("mounts").and_then(Value::as_array) {
        for (i, m) in list.iter().enumerate() {
            if m.get("destination").is_none() {
                return Err(SpecError::Missing {
                    field: format!("mounts[{i}].destination"),
                });
            }
        }
    }
    Ok(())
}
