# elementwise: GPU functions (to be written)
