//! Template specifications and the demo deployment.

use super::SimCoder;
use super::lifecycle::BuildPlan;
use coder_api::{TemplateVersionParameter, TemplateVersionParameterOption};

/// What [`SimCoder::add_template`] creates: a template, its active version and the
/// version's rich parameters.
#[derive(Clone, Debug, Default)]
pub struct TemplateSpec {
    pub name: String,
    pub display_name: String,
    pub description: String,
    /// A parameter without `kind` becomes a `string` parameter.
    pub parameters: Vec<TemplateVersionParameter>,
    pub deprecated: bool,
    pub active_user_count: i64,
}

impl TemplateSpec {
    /// A template without parameters; the display name is the capitalized name.
    pub fn named(name: &str) -> TemplateSpec {
        let mut chars = name.chars();
        let display_name = chars
            .next()
            .map(|c| c.to_uppercase().chain(chars).collect())
            .unwrap_or_default();
        TemplateSpec {
            name: name.to_string(),
            display_name,
            description: format!("A {name} development environment."),
            ..TemplateSpec::default()
        }
    }

    pub fn with_parameters(mut self, parameters: Vec<TemplateVersionParameter>) -> Self {
        self.parameters = parameters;
        self
    }
}

/// A preset for [`SimCoder::set_presets`]: a `coder_workspace_preset`.
#[derive(Clone, Debug, Default)]
pub struct PresetSpec {
    pub name: String,
    pub description: String,
    pub icon: String,
    /// The parameter values it fixes, in order.
    pub parameters: Vec<(String, String)>,
    /// Coder's UI pre-selects the default preset.
    pub default: bool,
    /// Its `prebuilds { instances = N }`: how many prebuilt workspaces are kept (and
    /// made ready at once by the simulator). `None`: no prebuilds block.
    pub prebuilds: Option<i64>,
}

impl PresetSpec {
    pub fn named(name: &str) -> PresetSpec {
        PresetSpec {
            name: name.to_string(),
            ..PresetSpec::default()
        }
    }

    /// Fixes parameter `name` to `value`.
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.parameters.push((name.to_string(), value.to_string()));
        self
    }

    pub fn described(mut self, description: &str) -> Self {
        self.description = description.to_string();
        self
    }

    /// Makes it the template's default preset.
    pub fn default_preset(mut self) -> Self {
        self.default = true;
        self
    }

    /// Keeps `instances` prebuilt workspaces of it.
    pub fn prebuilds(mut self, instances: i64) -> Self {
        self.prebuilds = Some(instances);
        self
    }
}

fn option(name: &str, value: &str, description: &str) -> TemplateVersionParameterOption {
    TemplateVersionParameterOption {
        name: name.to_string(),
        description: description.to_string(),
        value: value.to_string(),
        icon: String::new(),
    }
}

fn param(name: &str, display: &str, kind: &str, description: &str) -> TemplateVersionParameter {
    TemplateVersionParameter {
        name: name.to_string(),
        display_name: display.to_string(),
        description: description.to_string(),
        description_plaintext: description.to_string(),
        kind: kind.to_string(),
        ..TemplateVersionParameter::default()
    }
}

/// The parameters of the demo's `docker` template (also handy in tests).
pub(crate) fn docker_parameters() -> Vec<TemplateVersionParameter> {
    vec![
        TemplateVersionParameter {
            form_type: "radio".to_string(),
            default_value: "2".to_string(),
            icon: "/icon/memory.svg".to_string(),
            mutable: true,
            options: vec![
                option("2 Cores", "2", ""),
                option("4 Cores", "4", ""),
                option("8 Cores", "8", ""),
            ],
            ..param("cpu", "CPU cores", "number", "The number of CPU cores.")
        },
        TemplateVersionParameter {
            form_type: "dropdown".to_string(),
            default_value: "eu-west".to_string(),
            icon: "/emojis/1f30e.png".to_string(),
            options: vec![
                option("US East", "us-east", "Virginia"),
                option("EU West", "eu-west", "Frankfurt"),
                option("Asia Pacific", "ap-south", "Singapore"),
            ],
            ..param("region", "Region", "string", "Where the workspace runs.")
        },
        TemplateVersionParameter {
            form_type: "input".to_string(),
            mutable: true,
            validation_regex: r"^(https?://\S+)?$".to_string(),
            validation_error: "Must be an http(s) URL to a Git repository.".to_string(),
            ..param(
                "dotfiles_uri",
                "Dotfiles URL",
                "string",
                "Personalize your workspace with a dotfiles repository (optional).",
            )
        },
    ]
}

fn kubernetes_parameters() -> Vec<TemplateVersionParameter> {
    vec![
        TemplateVersionParameter {
            form_type: "switch".to_string(),
            default_value: "false".to_string(),
            mutable: true,
            ..param("gpu", "GPU", "bool", "Attach an NVIDIA GPU to the pod.")
        },
        TemplateVersionParameter {
            form_type: "slider".to_string(),
            default_value: "10".to_string(),
            validation_min: Some(1),
            validation_max: Some(100),
            ..param(
                "home_disk_size",
                "Home disk size (GB)",
                "number",
                "The size of the persistent home volume.",
            )
        },
    ]
}

/// The demo deployment: user `demo`, three templates and a realistic build plan.
pub(crate) fn seed_demo(sim: &SimCoder) {
    sim.add_user("demo", SimCoder::DEMO_TOKEN);
    let templates = [
        TemplateSpec {
            name: "docker".to_string(),
            display_name: "Docker Containers".to_string(),
            description: "Develop in a Docker container on the team's build host.".to_string(),
            parameters: docker_parameters(),
            deprecated: false,
            active_user_count: 12,
        },
        TemplateSpec {
            name: "kubernetes".to_string(),
            display_name: "Kubernetes (Deployment)".to_string(),
            description: "Develop in a pod on the shared Kubernetes cluster.".to_string(),
            parameters: kubernetes_parameters(),
            deprecated: false,
            active_user_count: 5,
        },
        TemplateSpec {
            name: "aws-linux".to_string(),
            display_name: "AWS EC2 (Linux)".to_string(),
            description: "Develop on an EC2 instance.".to_string(),
            parameters: Vec::new(),
            deprecated: true,
            active_user_count: 2,
        },
    ];
    for spec in templates {
        let name = spec.name.clone();
        let template = sim.add_template(spec);
        sim.set_build_plan(template.id, BuildPlan::demo());
        sim.set_claim_plan(template.id, BuildPlan::demo_claim());
        if name == "docker" {
            // The team's tested setups; the default one keeps prebuilt workspaces warm.
            sim.set_presets(
                template.id,
                vec![
                    PresetSpec::named("Frankfurt, 4 cores")
                        .described("The team's standard setup, kept prebuilt: ready in seconds.")
                        .with("region", "eu-west")
                        .with("cpu", "4")
                        .default_preset()
                        .prebuilds(2),
                    PresetSpec::named("Virginia, 8 cores")
                        .described("For heavy builds, near the US CI runners.")
                        .with("region", "us-east")
                        .with("cpu", "8"),
                ],
            );
        }
    }
}
