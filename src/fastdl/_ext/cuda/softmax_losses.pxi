# softmax_losses: GPU functions (to be written)
