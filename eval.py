from medclf.evaluate import main

if __name__ == "__main__":
    main()
