# dropout: GPU functions (to be written)
