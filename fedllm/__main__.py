"""`python -m fedllm` runs the command line."""

from fedllm.cli import main

main()
