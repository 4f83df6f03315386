# norm: GPU functions (to be written)
