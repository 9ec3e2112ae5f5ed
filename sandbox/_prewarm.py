"""Imported by the fork server of sandbox.fixtures before it forks any sandbox: the parsed AWS
service models and moto's backends are then built once per test worker instead of once per sandbox
(about a second of CPU each). A sandbox started any other way never imports this."""

from .aws import warm

warm()
