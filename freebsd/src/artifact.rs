//! The artifacts a FreeBSD base build produces, and the check of the names a
//! request gives for them.

use fruix_core::{Error, Result};

/// One artifact of a FreeBSD base build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Artifact {
    /// The installed world (`installworld` and `distribution`).
    World,
    /// `boot/kernel` of the installed kernel.
    Kernel,
    /// The world's `usr/include`.
    Headers,
    /// The world's `boot/`, without its `kernel*` entries.
    Bootloader,
}

impl Artifact {
    /// Every artifact, in the order `promotion.scm` usually lists them.
    pub const ALL: [Artifact; 4] = [
        Artifact::World,
        Artifact::Kernel,
        Artifact::Headers,
        Artifact::Bootloader,
    ];

    /// The artifact's name in requests, result roots and `promotion.scm`.
    pub fn name(self) -> &'static str {
        match self {
            Artifact::World => "world",
            Artifact::Kernel => "kernel",
            Artifact::Headers => "headers",
            Artifact::Bootloader => "bootloader",
        }
    }
}

/// The requested artifacts, in request order. A name that is not a base
/// artifact, or one requested twice, is [`Error::InvalidRequest`].
pub fn requested_artifacts(names: &[String]) -> Result<Vec<Artifact>> {
    let mut artifacts = Vec::with_capacity(names.len());
    for name in names {
        let artifact = Artifact::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| Error::InvalidRequest {
                message: format!(
                    "unknown artifact `{name}`; a FreeBSD base build produces {}",
                    Artifact::ALL.map(Artifact::name).join(", ")
                ),
            })?;
        if artifacts.contains(&artifact) {
            return Err(Error::InvalidRequest {
                message: format!("artifact `{name}` is requested twice; list it once"),
            });
        }
        artifacts.push(artifact);
    }
    Ok(artifacts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fruix_core::executor::base_artifacts;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn unknown_and_repeated_artifacts_are_refused() {
        let e = requested_artifacts(&names(&["world", "lib32"])).unwrap_err();
        assert!(matches!(e, Error::InvalidRequest { .. }), "{e}");
        assert!(e.to_string().contains("unknown artifact `lib32`"), "{e}");
        assert!(
            e.to_string().contains("world, kernel, headers, bootloader"),
            "{e}"
        );
        let e = requested_artifacts(&names(&["kernel", "kernel"])).unwrap_err();
        assert!(e.to_string().contains("requested twice"), "{e}");
        assert_eq!(
            requested_artifacts(&names(&["headers", "world"])).unwrap(),
            [Artifact::Headers, Artifact::World]
        );
    }

    #[test]
    fn the_artifacts_are_the_core_base_set() {
        assert_eq!(
            Artifact::ALL.map(Artifact::name).to_vec(),
            base_artifacts(),
            "fruix_core::promotion::BASE_ARTIFACTS and Artifact::ALL must agree"
        );
    }
}
