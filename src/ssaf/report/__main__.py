from ssaf.report.cli import main

main()
