# conv: GPU functions (to be written)
