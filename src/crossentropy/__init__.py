"""crossentropy"""
