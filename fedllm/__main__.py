"""`python -m fedllm` runs the command line."""

from fedllm.cli.main import main

main()
