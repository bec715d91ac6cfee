from trading_ops.maintenance.cli import main

main()
