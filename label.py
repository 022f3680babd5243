from medclf.cli.label import main

if __name__ == "__main__":
    main()
