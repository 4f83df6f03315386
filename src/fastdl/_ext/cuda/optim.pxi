# optim: GPU functions (to be written)
