def f():
    return "hi" + str(40 + 2)
