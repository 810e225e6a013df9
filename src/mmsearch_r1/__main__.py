from mmsearch_r1.cli import main

main()
