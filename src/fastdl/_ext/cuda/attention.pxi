# attention: GPU functions (to be written)
