"""A local emulator of ServiceStage's "Obtaining Job Details" API, driven by scenarios.

Start one in-process with :func:`running_sim`, or from the shell with ``poller sim``.
"""

from poller.sim._fields import ScenarioError
from poller.sim.aksk import AkSkAuthenticator
from poller.sim.app import create_app
from poller.sim.auth import DEFAULT_TOKEN, Authenticator, TokenAuthenticator, Verdict, token_auth
from poller.sim.config import DEFAULT_PROJECT_ID, SimConfig, config_from_scenario
from poller.sim.credentials import IamUser
from poller.sim.faults import FaultConfig, FaultKind, parse_faults
from poller.sim.generator import generate
from poller.sim.scenario import (
    JobSpec,
    Scenario,
    Step,
    TaskSpec,
    example_scenario_path,
    load_scenario,
    parse_job,
    parse_scenario,
    scenario_to_dict,
)
from poller.sim.server import SimHandle, running_sim, serve_forever
from poller.sim.state import DuplicateJobError
from poller.sim.tokens import IssuedTokenAuthenticator, IssuedTokens

__all__ = [
    "DEFAULT_PROJECT_ID",
    "DEFAULT_TOKEN",
    "AkSkAuthenticator",
    "Authenticator",
    "DuplicateJobError",
    "FaultConfig",
    "FaultKind",
    "IamUser",
    "IssuedTokenAuthenticator",
    "IssuedTokens",
    "JobSpec",
    "Scenario",
    "ScenarioError",
    "SimConfig",
    "SimHandle",
    "Step",
    "TaskSpec",
    "TokenAuthenticator",
    "Verdict",
    "config_from_scenario",
    "create_app",
    "example_scenario_path",
    "generate",
    "load_scenario",
    "parse_faults",
    "parse_job",
    "parse_scenario",
    "running_sim",
    "scenario_to_dict",
    "serve_forever",
    "token_auth",
]
