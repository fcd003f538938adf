from pertstore.cli._main import main

main()
