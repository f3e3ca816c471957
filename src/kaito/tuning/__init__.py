"""The tuning runtime: ``python -m kaito.tuning`` inside a tuning Job's pod.

Subcommands, one per container of the Job: ``fetch`` (dataset URLs into the data folder, with the
server-side request forgery rules the webhook applies), ``pull`` (an input image's files),
``train`` (LoRA/QLoRA with peft over the dataset, adapter into the results folder) and ``push``
(the adapter as an OCI image). Each failure ends the process with a non-zero status and one line
saying why. It imports only the pod contract and presets, never the controller side.
"""
