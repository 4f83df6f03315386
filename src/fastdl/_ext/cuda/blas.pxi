# blas: GPU functions (to be written)
