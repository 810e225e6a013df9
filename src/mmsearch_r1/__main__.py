from mmsearch_r1.cli import main

if __name__ == "__main__":  # the demo's second process imports this module again (multiprocessing's spawn)
    main()
