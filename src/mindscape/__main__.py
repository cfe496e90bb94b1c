from mindscape.cli import main

main()
