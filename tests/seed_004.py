"""Seed 004's own code, as the tutorial prints it (only re-indented), used as the
reference implementation: handgrad's two-layer system must reproduce it."""

import numpy as np


class NeuralNetwork:
    def __init__(self):
        np.random.seed(10)  # for generating the same results
        self.wij = np.random.rand(3, 4)  # input to hidden layer weights
        self.wjk = np.random.rand(4, 1)  # hidden layer to output weights

    def sigmoid(self, x, w):
        z = np.dot(x, w)
        return 1 / (1 + np.exp(-z))

    def sigmoid_derivative(self, x, w):
        return self.sigmoid(x, w) * (1 - self.sigmoid(x, w))

    def gradient_descent(self, x, y, iterations):
        for i in range(iterations):
            Xi = x
            Xj = self.sigmoid(Xi, self.wij)
            yhat = self.sigmoid(Xj, self.wjk)
            # gradients for hidden to output weights
            g_wjk = np.dot(Xj.T, (y - yhat) * self.sigmoid_derivative(Xj, self.wjk))
            # gradients for input to hidden weights
            g_wij = np.dot(
                Xi.T,
                np.dot((y - yhat) * self.sigmoid_derivative(Xj, self.wjk), self.wjk.T)
                * self.sigmoid_derivative(Xi, self.wij),
            )
            # update weights
            self.wij += g_wij
            self.wjk += g_wjk
        print("The final prediction from neural network are: ")
        print(yhat)


X = np.array([[0, 0, 1], [1, 1, 1], [1, 0, 1], [0, 1, 1]])
y = np.array([[0, 1, 1, 0]]).T
