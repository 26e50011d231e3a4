"""Terraform modules: init, workspace, plan, apply.

How this works.  Variables travel as ``-var-file`` JSON, which Terraform
does not interpolate.  The workspace is the job's environment (unless the
module turns workspaces off); a dry run stops after ``plan``; a deploy
applies exactly the plan file it made, which holds variable values in
clear and is therefore removed after the run.
"""

from __future__ import annotations

from .base import Kind, RunSpec, Step, base_env, resolve_tool

__all__ = ["KIND", "VARS_FILE"]

VARS_FILE = "vars.tfvars.json"
PLAN_FILE = "plan.tfplan"


def _steps(spec: RunSpec, helm_diff: bool) -> list[Step]:
    tf = resolve_tool(spec, "terraform")
    env = base_env(spec, [tf])
    env.update(
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        CHECKPOINT_DISABLE="1",  # no version check calls to hashicorp.com
        TF_DATA_DIR=str(spec.work_dir / "terraform.d"),
    )
    entry = spec.module.entry
    cwd = entry.parent if entry.suffix == ".tf" else entry  # the folder of .tf files
    plan_file = str(spec.work_dir / PLAN_FILE)
    vars_file = str(spec.work_dir / VARS_FILE)
    steps = [
        Step("init", (tf, "init", "-input=false", "-no-color"), env, cwd, announce="terraform init")
    ]
    if spec.module.options.get("workspace", True):
        argv = (tf, "workspace", "select", "-or-create", spec.env)
        steps.append(Step("workspace", argv, env, cwd, announce=f"terraform workspace {spec.env}"))
    plan: tuple[str, ...] = (tf, "plan", "-input=false", "-no-color", "-json")
    plan = (*plan, f"-var-file={vars_file}", f"-out={plan_file}")
    steps.append(Step("plan", plan, env, cwd, output="terraform", announce="terraform plan"))
    if spec.mode == "deploy":
        apply = (tf, "apply", "-input=false", "-no-color", "-json", plan_file)
        steps.append(Step("apply", apply, env, cwd, output="terraform", announce="terraform apply"))
    return steps


KIND = Kind(steps=_steps, vars_file=VARS_FILE, sensitive_files=(PLAN_FILE,))
