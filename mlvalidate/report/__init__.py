"""Reading result objects and writing them for people and machines; knows nothing about engines."""
