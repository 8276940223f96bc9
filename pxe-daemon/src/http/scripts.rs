//! Per-machine boot scripts: `/boot.ipxe` chains to `/ipxe?mac=..`, which renders the profile
//! of the machine's group (Matchbox style). The same profiles render GRUB configs (`/grub`) and
//! plain text such as cloud-init or Ignition (`/generic`).

use std::{collections::BTreeMap, sync::Arc};

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::boot::{Arch, BootPolicy, Firmware, MacAddr, Machine};

/// The entry script DHCP hands to iPXE: it chains to the per-machine endpoint with the facts
/// iPXE knows about itself.
const BOOT_IPXE: &str = "#!ipxe\n\
chain {{ http_base }}/ipxe?mac=${mac:hexhyp}&buildarch=${buildarch}&platform=${platform}\n";

/// Built-in iPXE template of a profile: kernel with its arguments, initrds, boot. `initrd=`
/// names let EFI-stub kernels find the initrds iPXE registered.
const IPXE_TEMPLATE: &str = "#!ipxe\n\
kernel {{ kernel }}{% for n in initrd_names %} initrd={{ n }}{% endfor %}{% if args %} {{ args }}{% endif %}\n\
{% for i in initrd %}initrd {{ i }}\n{% endfor %}boot\n";

/// Built-in GRUB template: boot the profile at once, fetching over HTTP.
const GRUB_TEMPLATE: &str = "set timeout=0\n\
menuentry \"{{ profile }}\" {\n\
  linux {{ grub_kernel }}{% if args %} {{ args }}{% endif %}\n\
{% if grub_initrd %}  initrd {{ grub_initrd | join(\" \") }}\n{% endif %}}\n";

/// A profile: what a group of machines boots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// Name, referenced by groups.
    pub name: String,
    /// Kernel: a path on this server or a full URL.
    pub kernel: Option<String>,
    /// Initrds, likewise.
    pub initrd: Vec<String>,
    /// Kernel arguments; itself a template over the same variables.
    pub args: String,
    /// Template source for `/ipxe` (default: the built-in one).
    pub ipxe_template: Option<String>,
    /// Template source for `/grub` (default: the built-in one).
    pub grub_template: Option<String>,
    /// Template source for `/generic` (no default).
    pub generic_template: Option<String>,
    /// Variables; a group's own variables win over these.
    pub vars: BTreeMap<String, String>,
}

/// Which rendering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptKind {
    /// An iPXE script.
    Ipxe,
    /// A GRUB config.
    Grub,
    /// Plain text (cloud-init, Ignition, ...).
    Generic,
}

impl ScriptKind {
    fn label(self) -> &'static str {
        match self {
            ScriptKind::Ipxe => "ipxe",
            ScriptKind::Grub => "grub",
            ScriptKind::Generic => "generic",
        }
    }
}

/// Why a script was not rendered.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The request lacks or garbles the machine's identity (400).
    #[error("{0}")]
    BadRequest(String),
    /// No group or profile for this machine (404, saying why).
    #[error("{0}")]
    NoMatch(String),
    /// The template failed (500; the reason is logged).
    #[error("rendering {kind} template of profile {profile}: {reason}")]
    Render {
        /// The profile.
        profile: String,
        /// The kind of script.
        kind: &'static str,
        /// minijinja's message.
        reason: String,
    },
}

/// Why the profiles were refused at start.
#[derive(Debug, thiserror::Error)]
#[error("profile {profile}: {kind} template: {reason}")]
pub struct TemplateError {
    /// The profile.
    pub profile: String,
    /// Which template.
    pub kind: &'static str,
    /// minijinja's message (with the line in the template).
    pub reason: String,
}

/// The machine as the script endpoints see it (from the query string).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineQuery {
    /// `mac=52-54-00-12-34-56` (iPXE's `${mac:hexhyp}`) or colon form.
    pub mac: MacAddr,
    /// From `arch=<option 93>` or `buildarch` + `platform`.
    pub arch: Option<Arch>,
    /// iPXE's `${buildarch}`, as sent.
    pub buildarch: Option<String>,
    /// iPXE's `${platform}`, as sent.
    pub platform: Option<String>,
}

impl MachineQuery {
    /// Parses `mac`, `arch`, `buildarch` and `platform` from a query string.
    pub fn parse(query: Option<&str>) -> Result<MachineQuery, ScriptError> {
        let mut mac = None;
        let (mut arch, mut buildarch, mut platform) = (None, None, None);
        for pair in query.unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
            match k {
                "mac" => {
                    mac = Some(v.parse::<MacAddr>().map_err(|e| {
                        ScriptError::BadRequest(format!("query parameter mac: {v:?} is {e}"))
                    })?)
                }
                "arch" => {
                    arch = Some(Arch(v.parse().map_err(|_| {
                        ScriptError::BadRequest(format!(
                            "query parameter arch {v:?} is not an option-93 number"
                        ))
                    })?))
                }
                "buildarch" => buildarch = Some(v.into_owned()),
                "platform" => platform = Some(v.into_owned()),
                _ => {}
            }
        }
        let mac = mac.ok_or_else(|| {
            ScriptError::BadRequest(
                "query parameter mac is required (e.g. ?mac=${mac:hexhyp})".into(),
            )
        })?;
        let arch = arch.or_else(|| arch_of(buildarch.as_deref(), platform.as_deref()));
        Ok(MachineQuery {
            mac,
            arch,
            buildarch,
            platform,
        })
    }
}

/// The option-93 arch from iPXE's `${buildarch}` and `${platform}`.
fn arch_of(buildarch: Option<&str>, platform: Option<&str>) -> Option<Arch> {
    match (platform?, buildarch) {
        ("pcbios", _) => Some(Arch::BIOS),
        ("efi", Some("x86_64")) => Some(Arch::EFI_X64),
        ("efi", Some("i386")) => Some(Arch::EFI_IA32),
        ("efi", Some("arm64")) => Some(Arch::EFI_ARM64),
        ("efi", Some("arm32")) => Some(Arch::EFI_ARM32),
        ("efi", Some("riscv64")) => Some(Arch::EFI_RISCV64),
        _ => None,
    }
}

#[derive(Serialize)]
struct Context<'a> {
    mac: String,
    mac_hexhyp: String,
    arch: Option<u16>,
    arch_name: &'static str,
    buildarch: Option<&'a str>,
    platform: Option<&'a str>,
    group: Option<&'a str>,
    profile: &'a str,
    http_base: &'a str,
    host: &'a str,
    kernel: String,
    initrd: Vec<String>,
    initrd_names: Vec<String>,
    grub_kernel: String,
    grub_initrd: Vec<String>,
    args: String,
    vars: BTreeMap<String, String>,
}

/// Checks that `source` compiles as a template (for the config check).
pub fn check_template(source: &str) -> Result<(), String> {
    let mut env = Environment::new();
    env.add_template("t", source)
        .map(|_| ())
        .map_err(|e| format!("{e:#}"))
}

/// Renders scripts from profiles.
#[derive(Debug)]
pub struct Scripts {
    env: Environment<'static>,
    /// Local artifact path (no leading `/`) to the boot stage fetching it is.
    artifact_stages: BTreeMap<String, crate::timeline::Stage>,
    profiles: BTreeMap<String, Profile>,
    default_profile: Option<String>,
    policy: Arc<BootPolicy>,
}

impl Scripts {
    /// Compiles every profile's templates; a syntax error refuses the start.
    pub fn new(
        profiles: Vec<Profile>,
        default_profile: Option<String>,
        policy: Arc<BootPolicy>,
    ) -> Result<Scripts, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Render errors name the undefined variable and the template line in release builds
        // too (minijinja keeps that detail for debug builds only by default).
        env.set_debug(true);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .keep_trailing_newline(true)
                .build()
                .expect("default delimiters are valid"),
        );
        let mut add = |name: String, source: String, profile: &str, kind: &'static str| {
            env.add_template_owned(name, source)
                .map_err(|e| TemplateError {
                    profile: profile.to_owned(),
                    kind,
                    reason: e.to_string(),
                })
        };
        add("boot.ipxe".into(), BOOT_IPXE.into(), "-", "boot.ipxe")?;
        add("builtin/ipxe".into(), IPXE_TEMPLATE.into(), "-", "ipxe")?;
        add("builtin/grub".into(), GRUB_TEMPLATE.into(), "-", "grub")?;
        for p in &profiles {
            add(format!("{}/args", p.name), p.args.clone(), &p.name, "args")?;
            for (kind, source) in [
                ("ipxe", &p.ipxe_template),
                ("grub", &p.grub_template),
                ("generic", &p.generic_template),
            ] {
                if let Some(source) = source {
                    add(format!("{}/{kind}", p.name), source.clone(), &p.name, kind)?;
                }
            }
        }
        let mut artifact_stages = BTreeMap::new();
        for p in &profiles {
            use crate::timeline::Stage;
            let local = |f: &String| {
                (!f.starts_with("http://") && !f.starts_with("https://"))
                    .then(|| f.trim_start_matches('/').to_owned())
            };
            let last = p.initrd.last().or(p.kernel.as_ref());
            for (file, stage) in p
                .kernel
                .iter()
                .map(|k| (k, Stage::Kernel))
                .chain(p.initrd.iter().map(|i| (i, Stage::Initrd)))
            {
                let stage = if Some(file) == last {
                    Stage::Done
                } else {
                    stage
                };
                if let Some(path) = local(file) {
                    artifact_stages.insert(path, stage);
                }
            }
        }
        Ok(Scripts {
            env,
            artifact_stages,
            profiles: profiles.into_iter().map(|p| (p.name.clone(), p)).collect(),
            default_profile,
            policy,
        })
    }

    /// The boot stage a request for the artifact at `path` is: a profile's kernel, an initrd,
    /// the last piece of a profile (done), or another artifact.
    pub fn artifact_stage(&self, path: &str) -> crate::timeline::Stage {
        self.artifact_stages
            .get(path.trim_start_matches('/'))
            .copied()
            .unwrap_or(crate::timeline::Stage::Artifact)
    }

    /// The entry script, chaining to `/ipxe` on `http_base`.
    pub fn boot_ipxe(&self, http_base: &str) -> Result<String, ScriptError> {
        self.env
            .get_template("boot.ipxe")
            .and_then(|t| t.render(minijinja::context! { http_base }))
            .map_err(|e| ScriptError::Render {
                profile: "-".into(),
                kind: "boot.ipxe",
                reason: e.to_string(),
            })
    }

    /// Renders `kind` for the machine in `q`, with URLs on `http_base` (`http://host[:port]`).
    pub fn render(
        &self,
        kind: ScriptKind,
        q: &MachineQuery,
        http_base: &str,
    ) -> Result<String, ScriptError> {
        let machine = Machine {
            arch: q.arch,
            firmware: Some(match kind {
                ScriptKind::Ipxe => Firmware::Ipxe,
                // GRUB and generic fetches come from later stages; match them as iPXE would.
                ScriptKind::Grub | ScriptKind::Generic => Firmware::Ipxe,
            }),
            ..Machine::known_by_mac(q.mac)
        };
        let group = self.policy.group_of(&machine);
        let profile_name = match (
            group.and_then(|g| g.profile.as_deref()),
            &self.default_profile,
        ) {
            (Some(p), _) => p,
            (None, Some(d)) => d.as_str(),
            (None, None) => {
                return Err(ScriptError::NoMatch(match group {
                    Some(g) => format!(
                        "group {:?} (MAC {}) has no profile and http.default_profile is not set\n",
                        g.name, q.mac
                    ),
                    None => format!(
                        "no group matches MAC {} (arch {}) and http.default_profile is not set\n",
                        q.mac,
                        q.arch.map_or("unknown", |a| a.label())
                    ),
                }))
            }
        };
        let profile = self.profiles.get(profile_name).ok_or_else(|| {
            ScriptError::NoMatch(format!("profile {profile_name:?} is not defined\n"))
        })?;
        let template_name = match kind {
            ScriptKind::Ipxe if profile.ipxe_template.is_some() => format!("{}/ipxe", profile.name),
            ScriptKind::Ipxe => "builtin/ipxe".into(),
            ScriptKind::Grub if profile.grub_template.is_some() => format!("{}/grub", profile.name),
            ScriptKind::Grub => "builtin/grub".into(),
            ScriptKind::Generic if profile.generic_template.is_some() => {
                format!("{}/generic", profile.name)
            }
            ScriptKind::Generic => {
                return Err(ScriptError::NoMatch(format!(
                    "profile {:?} has no generic template\n",
                    profile.name
                )))
            }
        };
        let render_err = |e: minijinja::Error| ScriptError::Render {
            profile: profile.name.clone(),
            kind: kind.label(),
            reason: format!("{e:#}"),
        };
        let host = http_base
            .split_once("://")
            .map_or(http_base, |(_, rest)| rest)
            .trim_end_matches('/');
        let url = |p: &str| {
            if p.starts_with("http://") || p.starts_with("https://") {
                p.to_owned()
            } else {
                format!("{http_base}/{}", p.trim_start_matches('/'))
            }
        };
        let grub_path = |p: &str| {
            if p.starts_with("http://") || p.starts_with("https://") {
                p.to_owned()
            } else {
                format!("(http,{host})/{}", p.trim_start_matches('/'))
            }
        };
        let mut vars = profile.vars.clone();
        if let Some(g) = group {
            vars.extend(g.vars.clone());
        }
        let mac_hexhyp = q.mac.to_string().replace(':', "-");
        let kernel = profile.kernel.clone().unwrap_or_default();
        let mut ctx = Context {
            mac: q.mac.to_string(),
            mac_hexhyp,
            arch: q.arch.map(|a| a.0),
            arch_name: q.arch.map_or("unknown", |a| a.label()),
            buildarch: q.buildarch.as_deref(),
            platform: q.platform.as_deref(),
            group: group.map(|g| g.name.as_str()),
            profile: &profile.name,
            http_base,
            host,
            kernel: url(&kernel),
            initrd: profile.initrd.iter().map(|i| url(i)).collect(),
            initrd_names: profile
                .initrd
                .iter()
                .map(|i| i.rsplit('/').next().unwrap_or(i).to_owned())
                .collect(),
            grub_kernel: grub_path(&kernel),
            grub_initrd: profile.initrd.iter().map(|i| grub_path(i)).collect(),
            args: String::new(),
            vars,
        };
        ctx.args = self
            .env
            .get_template(&format!("{}/args", profile.name))
            .and_then(|t| t.render(minijinja::value::Serde(&ctx)))
            .map_err(render_err)?
            .trim()
            .to_owned();
        self.env
            .get_template(&template_name)
            .and_then(|t| t.render(minijinja::value::Serde(&ctx)))
            .map_err(render_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::{Group, Selectors};

    fn scripts(default_profile: Option<&str>) -> Scripts {
        let group = Group {
            name: "workers".into(),
            selectors: Selectors {
                mac_prefixes: vec![vec![0x52, 0x54, 0x00]],
                ..Selectors::default()
            },
            profile: Some("worker".into()),
            vars: BTreeMap::from([("role".into(), "worker".into())]),
            ..Group::default()
        };
        let policy = Arc::new(BootPolicy::new(BTreeMap::new(), vec![group], None, 80));
        let worker = Profile {
            name: "worker".into(),
            kernel: Some("/assets/vmlinuz".into()),
            initrd: vec![
                "assets/initrd.img".into(),
                "http://mirror.example/extra.cpio".into(),
            ],
            args: "console=ttyS0 role={{ vars.role }} mac={{ mac }}".into(),
            generic_template: Some("#cloud-config\nhostname: node-{{ mac_hexhyp }}\n".into()),
            vars: BTreeMap::from([("role".into(), "default-role".into())]),
            ..Profile::default()
        };
        let rescue = Profile {
            name: "rescue".into(),
            kernel: Some("rescue/vmlinuz".into()),
            ipxe_template: Some("#!ipxe\necho rescue {{ mac }} {{ vars.missing }}\n".into()),
            ..Profile::default()
        };
        Scripts::new(
            vec![worker, rescue],
            default_profile.map(str::to_owned),
            policy,
        )
        .unwrap()
    }

    fn query(mac: &str) -> MachineQuery {
        MachineQuery::parse(Some(&format!("mac={mac}&buildarch=x86_64&platform=efi"))).unwrap()
    }

    #[test]
    fn boot_ipxe_chains_to_the_machine_endpoint() {
        let s = scripts(None).boot_ipxe("http://198.18.0.1:8080").unwrap();
        assert_eq!(
            s,
            "#!ipxe\nchain http://198.18.0.1:8080/ipxe?mac=${mac:hexhyp}&buildarch=${buildarch}&platform=${platform}\n"
        );
    }

    #[test]
    fn renders_the_group_profile_for_a_mac() {
        let s = scripts(None)
            .render(
                ScriptKind::Ipxe,
                &query("52-54-00-12-34-56"),
                "http://198.18.0.1",
            )
            .unwrap();
        assert_eq!(
            s,
            "#!ipxe\n\
             kernel http://198.18.0.1/assets/vmlinuz initrd=initrd.img initrd=extra.cpio console=ttyS0 role=worker mac=52:54:00:12:34:56\n\
             initrd http://198.18.0.1/assets/initrd.img\n\
             initrd http://mirror.example/extra.cpio\n\
             boot\n"
        );
        let g = scripts(None)
            .render(
                ScriptKind::Grub,
                &query("52:54:00:12:34:56"),
                "http://198.18.0.1:8080",
            )
            .unwrap();
        assert!(
            g.contains("linux (http,198.18.0.1:8080)/assets/vmlinuz console=ttyS0"),
            "{g}"
        );
        assert!(
            g.contains(
                "initrd (http,198.18.0.1:8080)/assets/initrd.img http://mirror.example/extra.cpio"
            ),
            "{g}"
        );
        let c = scripts(None)
            .render(
                ScriptKind::Generic,
                &query("52:54:00:12:34:56"),
                "http://198.18.0.1",
            )
            .unwrap();
        assert_eq!(c, "#cloud-config\nhostname: node-52-54-00-12-34-56\n");
    }

    #[test]
    fn no_match_says_why_and_default_profile_applies() {
        let err = scripts(None)
            .render(ScriptKind::Ipxe, &query("aa-bb-cc-dd-ee-ff"), "http://h")
            .unwrap_err();
        assert!(
            matches!(&err, ScriptError::NoMatch(m) if m.contains("no group matches MAC aa:bb:cc:dd:ee:ff")),
            "{err}"
        );
        // The default profile's template uses an undefined variable: a clear render error.
        let err = scripts(Some("rescue"))
            .render(ScriptKind::Ipxe, &query("aa-bb-cc-dd-ee-ff"), "http://h")
            .unwrap_err();
        assert!(
            matches!(&err, ScriptError::Render { profile, .. } if profile == "rescue"),
            "{err}"
        );
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn query_parsing() {
        assert!(matches!(
            MachineQuery::parse(None),
            Err(ScriptError::BadRequest(_))
        ));
        assert!(matches!(
            MachineQuery::parse(Some("mac=zz")),
            Err(ScriptError::BadRequest(_))
        ));
        let q = MachineQuery::parse(Some("mac=52%3A54%3A00%3A00%3A00%3A01&arch=11")).unwrap();
        assert_eq!(q.arch, Some(Arch::EFI_ARM64));
        let q = MachineQuery::parse(Some("mac=52-54-00-00-00-01&platform=pcbios&buildarch=i386"))
            .unwrap();
        assert_eq!(q.arch, Some(Arch::BIOS));
    }

    #[test]
    fn template_syntax_errors_refuse_the_start() {
        let policy = Arc::new(BootPolicy::default());
        let bad = Profile {
            name: "bad".into(),
            ipxe_template: Some("#!ipxe\n{% if %}\n".into()),
            ..Profile::default()
        };
        let err = Scripts::new(vec![bad], None, policy).unwrap_err();
        assert_eq!(err.profile, "bad");
        assert_eq!(err.kind, "ipxe");
    }
}
